"""ddpmlab's benchmarks, run by hand: ``python -m benchmarks NAME [options]`` (see ``__main__.py``).

Modules:

- ``harness``: what every benchmark shares (timing, same-work checks, result files, machine info,
  diffusers' twin of our UNet and the weight transfer, both sampling loops);
- ``unet_speed`` (``training``), ``sampling_speed`` (``sampling``), ``cpu_profile`` (``profile``): CPU
  speed of our UNet against diffusers' on the MNIST network;
- ``toy`` (``toy``): wall time and distance to the truth of the toy configs;
- ``mnist_judge`` (``judge``): a CNN trained on real MNIST that judges generated digits;
- ``classifier_guidance`` (``classifier-guidance``): judge accuracy of classifier-guided samples;
- ``gpu`` (``gpu``): the GPU measurement, one module per section.

Results, with machine and versions, go to ``benchmarks/results/``.
"""
