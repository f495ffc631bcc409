"""MONAI transforms for EmbedSeg: center targets, label hygiene, object-centered crops, clustering."""

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
    RemoveSmallInstances,
    RemoveSmallInstancesd,
    RemoveSmallInstancesD,
    RemoveSmallInstancesDict,
    ValidateInstanceLabels,
    ValidateInstanceLabelsd,
    ValidateInstanceLabelsD,
    ValidateInstanceLabelsDict,
)
from .crop import RandObjectCrop, RandObjectCropd, RandObjectCropD, RandObjectCropDict
from .cluster import (
    EmbedSegCluster,
    EmbedSegClusterd,
    EmbedSegClusterD,
    EmbedSegClusterDict,
    cluster_embeddings,
)
