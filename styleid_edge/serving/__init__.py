"""Serving the StyleID stages to many appliances: a PyTriton server and a Triton model repository.

``server`` hosts the pack's ONNX models in a real Triton Inference Server (the one bundled in the
``nvidia-pytriton`` wheel); ``repository`` writes a model repository for a full Triton deployment;
``cli`` adds ``styleid-edge serve`` and ``styleid-edge export triton``. The appliance side is the
``triton`` runtime backend (``styleid_edge.runtime.triton_backend``).
"""
