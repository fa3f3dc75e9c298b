"""What a model replica does with a batch: tokenize, run ONNX Runtime, postprocess. Nothing
here knows Ray or HTTP."""
