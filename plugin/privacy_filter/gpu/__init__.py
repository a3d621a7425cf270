"""Everything that runs on an NVIDIA GPU, and the only package that imports CuPy or TensorRT.

* ``kernels/``: the CUDA C sources (package data), compiled at run time by NVRTC;
* ``kernel_abi``: their parameter lists parsed from the sources, checked at every launch;
* ``effects``: the CUDA runtime wrapper, device planes and the mask-driven effects;
* ``model_io``: model pre- and post-processing on the device (YUV → model input, map → mask);
* ``tensorrt``: building and running TensorRT engines.

Nothing is imported from here unless a GPU component is asked for (``backends``).
"""
