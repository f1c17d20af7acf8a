// Drawing a preview on a canvas: the picture, then zones, lines and boxes given in source pixels.

const COLORS = ["#3fb6ff", "#ffc145", "#3fd98b", "#ff6b6b", "#c77dff", "#ff9f43", "#48dbfb", "#feca57"];

export function colorOf(text) {
  let hash = 0;
  for (const ch of String(text)) hash = (hash * 31 + ch.charCodeAt(0)) | 0;
  return COLORS[Math.abs(hash) % COLORS.length];
}

// Draw `preview` (a /api/previews message) on `canvas` with `geometry` ({zones, lines}); `extra(ctx, scale)` after.
// A canvas cleared for one camera (`clearPicture`) draws none of another's.
export function drawPreview(canvas, preview, geometry, extra) {
  const image = new Image();
  image.onload = () => {
    if (canvas.dataset.stream && canvas.dataset.stream !== preview.stream_id) return;
    canvas.width = preview.width;
    canvas.height = preview.height;
    canvas.dataset.sourceWidth = preview.source_width;
    canvas.dataset.sourceHeight = preview.source_height;
    canvas.dataset.seq = preview.seq;
    const ctx = canvas.getContext("2d");
    ctx.drawImage(image, 0, 0, preview.width, preview.height);
    const scale = preview.width / preview.source_width;
    drawGeometry(ctx, scale, geometry);
    drawBoxes(ctx, scale, preview.boxes);
    if (extra) extra(ctx, scale);
  };
  image.src = `data:image/jpeg;base64,${preview.jpeg}`;
}

// Show nothing on `canvas` (and no source size to convert clicks with) until a preview of `streamId` is drawn.
export function clearPicture(canvas, streamId) {
  canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
  for (const key of ["seq", "sourceWidth", "sourceHeight"]) delete canvas.dataset[key];
  canvas.dataset.stream = streamId;
}

export function drawGeometry(ctx, scale, { zones, lines }) {
  ctx.lineWidth = 2;
  ctx.font = "12px system-ui, sans-serif";
  for (const zone of zones) {
    const color = colorOf(zone.name);
    polygon(ctx, zone.polygon.map(([x, y]) => [x * scale, y * scale]), color, true);
    label(ctx, zone.name, zone.polygon[0][0] * scale, zone.polygon[0][1] * scale, color);
  }
  for (const line of lines) {
    const color = colorOf(line.name);
    arrow(ctx, line.start.map((v) => v * scale), line.end.map((v) => v * scale), color);
    label(ctx, line.name, line.start[0] * scale, line.start[1] * scale, color);
  }
}

export function drawBoxes(ctx, scale, boxes) {
  ctx.font = "12px system-ui, sans-serif";
  for (const box of boxes) {
    const [x0, y0, x1, y1] = box.xyxy.map((v) => v * scale);
    const color = colorOf(box.class);
    ctx.strokeStyle = color;
    ctx.lineWidth = 2;
    ctx.setLineDash(box.coasted ? [4, 3] : []);
    ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
    ctx.setLineDash([]);
    label(ctx, box.track_id >= 0 ? `${box.class} #${box.track_id}` : box.class, x0, y0, color);
  }
}

export function polygon(ctx, points, color, closed) {
  if (!points.length) return;
  ctx.strokeStyle = color;
  ctx.fillStyle = color + "33";
  ctx.beginPath();
  points.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
  if (closed) {
    ctx.closePath();
    ctx.fill();
  }
  ctx.stroke();
  for (const [x, y] of points) ctx.fillRect(x - 2, y - 2, 4, 4);
}

// A directed line with an arrowhead at `end` and a tick showing the "in" side (right-hand when walking start -> end).
export function arrow(ctx, [x0, y0], [x1, y1], color) {
  ctx.strokeStyle = color;
  ctx.fillStyle = color;
  ctx.beginPath();
  ctx.moveTo(x0, y0);
  ctx.lineTo(x1, y1);
  ctx.stroke();
  const angle = Math.atan2(y1 - y0, x1 - x0);
  ctx.beginPath();
  ctx.moveTo(x1, y1);
  ctx.lineTo(x1 - 10 * Math.cos(angle - 0.4), y1 - 10 * Math.sin(angle - 0.4));
  ctx.lineTo(x1 - 10 * Math.cos(angle + 0.4), y1 - 10 * Math.sin(angle + 0.4));
  ctx.closePath();
  ctx.fill();
  const [mx, my] = [(x0 + x1) / 2, (y0 + y1) / 2];
  const [nx, ny] = [-Math.sin(angle), Math.cos(angle)];
  ctx.beginPath();
  ctx.moveTo(mx, my);
  ctx.lineTo(mx + nx * 12, my + ny * 12);
  ctx.stroke();
  ctx.fillText("in", mx + nx * 16 - 5, my + ny * 16 + 4);
}

function label(ctx, text, x, y, color) {
  const width = ctx.measureText(text).width + 6;
  ctx.fillStyle = color;
  ctx.fillRect(x, Math.max(0, y - 15), width, 15);
  ctx.fillStyle = "#000";
  ctx.fillText(text, x + 3, Math.max(11, y - 4));
}
