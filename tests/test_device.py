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
