"""Every registered model, declared without building it (engine.models.registry)."""
from engine.models.registry import ModelSpec, register

# The smallest sides the nets take (each 2x2 max pool halves the side, dropping an odd last row):
# airbench's valid 2x2 stem and three pools need 9, ResNet-9's three pools 8, tiny's two 4.
AIRBENCH_MIN = 9

register(ModelSpec(
    "airbench", "airbench", normalization="cifar10", recipe="airbench",
    description="airbench94 (Keller Jordan): whitened 2x2 stem + 3 conv groups, ~2.0M params, trained with SGD "
                "and lookahead in 9.9 epochs",
    data_init=True, data_init_frozen=("whiten/kernel",), train_epochs={"whiten/bias": "whiten_bias_epochs"},
    options=("width", "whiten_bias_epochs", "bn_momentum"), min_size=AIRBENCH_MIN))
register(ModelSpec(
    "airbench-muon", "airbench", normalization="cifar10", recipe="airbench-muon",
    description="airbench94_muon's net (airbench, head at std 1 scaled by 1/width), trained with Muon in 8 "
                "epochs",
    data_init=True, data_init_frozen=("whiten/kernel",), train_epochs={"whiten/bias": "whiten_bias_epochs"},
    options=("width", "whiten_bias_epochs", "bn_momentum"), min_size=AIRBENCH_MIN))
register(ModelSpec("resnet9", "resnet9", normalization="cifar10", recipe="classic",
                   description="Page's DAWNBench ResNet-9, ~6.6M params, 94%-class in 24 epochs", min_size=8))
register(ModelSpec("tiny", "tiny", normalization="cifar10", recipe="classic",
                   description="2-conv test net for tests and smoke runs", min_size=4))

# Transfer learning: name -> (keras.applications constructor, kernels.normalize mode = the backbone's
# preprocess_input, min input side, default input side).
BACKBONES = {
    "vgg16": ("VGG16", "caffe", 32, 64),
    "vgg19": ("VGG19", "caffe", 32, 224),
    "inception_v3": ("InceptionV3", "tf", 75, 75),
    "densenet121": ("DenseNet121", "torch", 32, 64),
    "resnet50": ("ResNet50", "caffe", 32, 64),
}
for _name, (_ctor, _norm, _min, _default) in BACKBONES.items():
    register(ModelSpec(_name, "backbones", normalization=_norm, recipe="transfer",
                       description=f"keras.applications {_name} backbone + head (--weights, --freeze, --head)",
                       default_size=_default, min_size=_min, options=("weights", "freeze", "head"), backbone=True))
