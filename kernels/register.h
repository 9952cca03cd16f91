// Registers the CUDA paths. To add your own fused path: put its files under kernels/,
// add them to kernels/CMakeLists.txt, and add one register_path line in register.cpp.
#pragma once
namespace fusecheck {
void register_cuda_paths();
}
