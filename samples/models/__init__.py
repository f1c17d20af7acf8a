"""The demo detector (world_detector.onnx) and its model card; shipped as package data."""
