"""monai_embedseg: EmbedSeg instance segmentation as MONAI components.

Where things are (lower layers never import higher ones):

* the method's contracts: :mod:`.embedding` (prediction layout and units), :mod:`.labels` (label formats and their
  validation), :mod:`.medoid` (object centers), :mod:`.intensity` (the normalisation rule, mostly empty images),
  :mod:`.cluster_settings` (the clustering's settings as one value), :mod:`.constants`;
* MONAI components: :mod:`.transforms`, :mod:`.networks`, :mod:`.losses`, :mod:`.inferers`, :mod:`.metrics`,
  :mod:`.engines`, :mod:`.handlers`, :mod:`.optimizers` (a learning-rate schedule that fits a time limit),
  :mod:`.data` (I/O, datasets, dataset properties);
* pretrained models (registry, the shipped model, bioimage.io packages): :mod:`.pretrained`;
* bundles, the command line and interactive use: :mod:`.bundle`, :mod:`.cli`, :mod:`.segmenter`, :mod:`.napari`
  (the napari plugin);
* :mod:`.testing`: references for tests and benchmarks (oracle predictions).
"""

__version__ = "0.1.0"
