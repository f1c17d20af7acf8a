"""Multi-object tracking: ByteTrack-style tracker (`bytetrack`), its per-stream stage (`stage`), MOTChallenge I/O."""
