"""The TFLite→ONNX converter's version, apart from the converter itself.

The model cache checks it on every start (``models.pull.cached_problem``); importing the
converter for it would also load ``onnx`` and the ``tflite`` schema (~0.3 s of a
``privacy-filter process`` start), which only a conversion needs.
"""

#: Bumped whenever the produced graph changes; part of the model cache manifest.
CONVERTER_VERSION = "1"

#: The TF.js graph → ONNX converter's (``models.tfjs2onnx``) version, recorded with each cached
#: detector model.  "2": the batch dimension is dynamic (the first release had batch 1 baked in).
TFJS_CONVERTER_VERSION = "2"
