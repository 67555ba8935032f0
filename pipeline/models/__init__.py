"""The models: the built-in MLP and CNN, torchvision architectures, your exported model; and training."""
