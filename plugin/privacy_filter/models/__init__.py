"""Model layer: specs and registry, the TFLite→ONNX converter, pull/cache of the default model."""
