// Registers the CPU paths (ref64-cpu, ref32-cpu, emulated-cpu) in the path registry.
#pragma once
namespace fusecheck {
void register_cpu_paths();
}
