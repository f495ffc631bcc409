"""MONAI transforms for EmbedSeg: centre targets, label hygiene, object-centred crops, clustering."""

from .medoid import CENTER_MODES, exact_medoid, object_centers
from .center import GenerateCenterImage, GenerateCenterImaged, GenerateCenterImageD, GenerateCenterImageDict
from .labels import (
    FillHolesPerObject,
    FillHolesPerObjectd,
    FillHolesPerObjectD,
    FillHolesPerObjectDict,
    LabelToOneHot,
    LabelToOneHotd,
    LabelToOneHotD,
    LabelToOneHotDict,
    OneHotToLabel,
    OneHotToLabeld,
    OneHotToLabelD,
    OneHotToLabelDict,
    RelabelConsecutive,
    RelabelConsecutived,
    RelabelConsecutiveD,
    RelabelConsecutiveDict,
    RemoveSmallObjects,
    RemoveSmallObjectsd,
    RemoveSmallObjectsD,
    RemoveSmallObjectsDict,
    ValidateInstanceLabels,
    ValidateInstanceLabelsd,
    ValidateInstanceLabelsD,
    ValidateInstanceLabelsDict,
    check_instance_labels,
    instance_bboxes,
)
from .crop import RandObjectCrop, RandObjectCropd, RandObjectCropD, RandObjectCropDict
from .cluster import (
    EmbedSegCluster,
    EmbedSegClusterd,
    EmbedSegClusterD,
    EmbedSegClusterDict,
    cluster_embeddings,
)
