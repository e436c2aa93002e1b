"""GPU check: one script (run_gpu.sh) that installs the GPU extras on an NVIDIA machine and benchmarks
TensorRT and CUDA against PyTorch CUDA fp32/fp16. Everything but the measurement runs (and is tested) on CPU."""
