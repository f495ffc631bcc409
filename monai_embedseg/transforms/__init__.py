"""MONAI transforms for EmbedSeg: center targets, label hygiene, object-centered crops, clustering."""

from .center import GenerateCenterImage, GenerateCenterImageD, GenerateCenterImaged, GenerateCenterImageDict
from .cluster import (
    EmbedSegCluster,
    EmbedSegClusterD,
    EmbedSegClusterd,
    EmbedSegClusterDict,
    cluster_embeddings,
)
from .crop import RandObjectCrop, RandObjectCropD, RandObjectCropd, RandObjectCropDict
from .intensity import (
    ScaleIntensityContentPercentiles,
    ScaleIntensityContentPercentilesD,
    ScaleIntensityContentPercentilesd,
    ScaleIntensityContentPercentilesDict,
)
from .labels import (
    FillHolesPerObject,
    FillHolesPerObjectD,
    FillHolesPerObjectd,
    FillHolesPerObjectDict,
    LabelToOneHot,
    LabelToOneHotD,
    LabelToOneHotd,
    LabelToOneHotDict,
    OneHotToLabel,
    OneHotToLabelD,
    OneHotToLabeld,
    OneHotToLabelDict,
    RelabelConsecutive,
    RelabelConsecutiveD,
    RelabelConsecutived,
    RelabelConsecutiveDict,
    RemoveSmallInstances,
    RemoveSmallInstancesD,
    RemoveSmallInstancesd,
    RemoveSmallInstancesDict,
    ValidateInstanceLabels,
    ValidateInstanceLabelsD,
    ValidateInstanceLabelsd,
    ValidateInstanceLabelsDict,
)
