"""Where a train step's time goes, plain vs memory-saving (torch.profiler, CUDA).

    python benchmarks/profile_step.py      # imagenet-b, batch 32, on the GPU

Prints seconds per step and the top operators by CUDA time for each mode; the figures
quoted in benchmarks/README.md (GPU time vs wall time, host-bound steps) come from it.
"""

import torch, irevnet, time, torch.nn.functional as F
from torch.profiler import profile, ProfilerActivity
dev = torch.device("cuda")
m = irevnet.create_model("imagenet-b").to(dev)
x = torch.randn(32, 3, 224, 224, device=dev); y = torch.randint(0, 1000, (32,), device=dev)
def step():
    m.zero_grad(set_to_none=True); F.cross_entropy(m(x), y).backward()
for me in (False, True):
    m.set_memory_efficient(me)
    for _ in range(2): step()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(3): step()
    torch.cuda.synchronize()
    print("memory_efficient", me, "s/step", (time.perf_counter() - t) / 3)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        step(); torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=14, max_name_column_width=60))
