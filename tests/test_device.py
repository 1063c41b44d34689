import pytest
import torch

from alexnet.device import resolve_device, resolve_precision
from alexnet.errors import UserError


def test_auto_precision_is_fp32_on_cpu_and_explicit_choices_are_kept():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == torch.float32
    assert resolve_precision("bf16", cpu) == torch.bfloat16
    assert resolve_precision("fp16", cpu) == torch.float16
    with pytest.raises(UserError, match="fp64"):
        resolve_precision("fp64", cpu)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_missing_cuda_is_a_clear_error():
    assert resolve_device("auto").type in ("cpu", "mps")
    with pytest.raises(UserError, match="CUDA is not available"):
        resolve_device("cuda")


def test_device_and_precision_messages_do_not_name_a_flag():
    """``alexnet.load(path, device="gpu")`` said ``--device 'gpu'``: a flag the Python caller never typed."""
    with pytest.raises(UserError, match=r"^device 'gpu' is not a device; use one of auto, cpu, cuda, mps or cuda:N$"):
        resolve_device("gpu")
    with pytest.raises(UserError, match=r"^precision 'fp64' is not one of auto, fp32, bf16, fp16$"):
        resolve_precision("fp64", torch.device("cpu"))


def test_memory_a_step_frees_is_kept_for_the_next():
    """``keep_freed_memory``: training steps of a 4096 x 4096 layer (fc7's size: a 67 MB gradient, freed by
    ``zero_grad`` and allocated again by every backward) fault in no fresh pages once warm. glibc mapped and unmapped
    that gradient every step: 16,384 pages faulted in and zeroed per step (~100 MB per AlexNet step, 1.4-2x the
    step time on a CPU)."""
    import resource

    from alexnet.device import keep_freed_memory

    if not keep_freed_memory():
        pytest.skip("not glibc's malloc")
    torch.manual_seed(0)
    layer, x = torch.nn.Linear(4096, 4096), torch.randn(64, 4096)
    opt = torch.optim.SGD(layer.parameters(), lr=1e-3, momentum=0.9)

    def step():
        opt.zero_grad(set_to_none=True)
        layer(x).square().mean().backward()
        opt.step()

    for _ in range(5):  # warm: the heap grows to hold what a step needs
        step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        step()
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5
    assert faults < 4096 * 4096 * 4 // 4096 // 10, f"{faults:.0f} page faults per step"
