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
