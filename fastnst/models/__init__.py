"""Networks, no I/O: ``spec`` (network shapes, plain Python), ``transformer`` (the image transformation
network) and ``vgg`` (the VGG loss network). Import the module you need; this package imports nothing,
so the stylization path can read a network's shape without loading PyTorch."""
