"""Names of the export formats and precisions (no heavy imports: the command line reads them to build its parser).

The exporters are in :mod:`featherface.export.mobile`."""

__all__ = ["FORMATS", "PRECISIONS", "MOBILE_EXTRA"]

#: ``featherface export --format``: onnx (dynamic sizes), ort (ONNX Runtime mobile), tflite (LiteRT), coreml.
FORMATS = ("onnx", "ort", "tflite", "coreml")
#: ``--precision`` of the tflite export (Core ML is always fp16, ONNX / ORT fp32).
PRECISIONS = ("fp32", "fp16")
#: How to install the optional converters.
MOBILE_EXTRA = "pip install 'featherface[mobile]'"
