"""Deployment: detections on images, and the export for MXNet, C++ and onnxruntime consumers."""
from .detect import Detections, detect_image, read_image
from .export import export_model, nms
from .inputs import preprocess

__all__ = ['Detections', 'detect_image', 'read_image', 'export_model', 'nms',
           'preprocess']
