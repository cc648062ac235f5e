"""vaelib: autoencoders and variational autoencoders on MNIST, for the course "Roaming the Latent Space".

Modules: data, fonts, models, losses, train, checkpoints, registry, judge, study, plots, widgets,
morphometry, disentanglement. Import them by name:
    from vaelib import data, models, losses, train
"""
__version__ = "0.1.0"
