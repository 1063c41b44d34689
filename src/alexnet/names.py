"""Names and bounds shared by several commands, defined once. No imports: the CLI reads them to build its parsers.

Tests keep each equal to the code it names: ``ARCHS`` to ``alexnet.model.list_models()``, ``MIN_IMAGE_SIZE`` to
``model.MIN_INPUT_SIZE``, ``MAX_IMAGE_SIZE`` to ``preprocess.MAX_SIDE``, ``PRESETS`` to the data transforms' presets,
``RECIPES`` to ``config.RECIPES``.
"""

ARCHS = ("alexnet", "alexnet2012")  # alexnet.model.list_models()
PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # autocast precisions (alexnet.device.resolve_precision)
PRESETS = ("paper", "torchvision")  # augmentation presets: the paper's crop + flip + PCA noise; RandomResizedCrop
EXPLAIN_METHODS = ("gradcam", "occlusion", "saliency", "integrated-gradients")  # alexnet.explain.METHODS
MAX_EXPLAIN_STEPS = 4096  # integrated gradients: path points (each a forward and backward pass per image)
RECIPES = ("fast", "paper", "torchvision")  # training recipes (alexnet.config.RECIPES)
DEFAULT_RECIPE = "fast"

# One image-size range for every command (train, bench, and the preprocessing a served model carries): bench once
# stopped at 1024 px while train went to 2048.
MIN_IMAGE_SIZE = 63  # px: the smallest side for which AlexNet's three 3x3/2 max-pools still leave one pixel
MAX_IMAGE_SIZE = 2048  # px: larger crops or resizes are refused (a 100000-px crop would allocate 120 GB per image)
# px: the largest crop whose default resize (x 256/224, preprocess.default_resize) is still within MAX_IMAGE_SIZE
MAX_CROP_DEFAULT_RESIZE = MAX_IMAGE_SIZE * 224 // 256  # 1792

DEVICE_PATTERN = r"auto|cpu|mps|cuda(:\d+)?"  # what --device accepts (alexnet.device.resolve_device)
DEVICE_HELP = "auto, cpu, cuda, cuda:N or mps"
