"""Which attributes a Creator RSA Digital Signature must cover (PS3.15 Annex C, Section C.2).

PS3.15 C.2 says the equipment that creates a SOP Instance signs, "as a minimum", these
attributes, each *if present* at the top level of the Data Set:

    a. the SOP Class and Instance UIDs                         (SOP Common, PS3.3 C.12.1)
    b. the SOP Creation Date and Time                          (Instance Creation Date/Time)
    c. the Study and Series Instance UIDs
    d. any attributes of the General Equipment Module           (PS3.3 C.7.5.1)
    e. any attributes of the Overlay Plane, Curve or Graphic Annotation Modules
    f. any attributes of the General Image and Image Pixel Modules (PS3.3 C.7.6.1, C.7.6.3)
    g. any attributes of the SR Document General and SR Document Content Modules
    h. any attributes of the Waveform and Waveform Annotation Modules
    i. any attributes of the Multi-frame Functional Groups Module
    j.. and of the enhanced-modality modules the later editions add (Enhanced MR/CT/XA/PET/US
       Image, MR Spectroscopy, Raw Data, Segmentation, Encapsulated Document, X-Ray 3D,
       Surface Segmentation/Mesh, Structured Display, Implant Templates, Point Cloud,
       Enhanced Mammography, Tractography, Volumetric Graphic Annotation).

The table below lists those modules' attributes by keyword, in the letters' order. Where an
attribute belongs to several modules it is listed once, under its first module. The list was
cross-checked, module by module, against the one DCMTK's ``dcmsign`` enforces for ``+pc``
(extracted there from DICOM 2019c), so that ``dcmsign --verify +rc`` accepts our signatures and we
accept its.

Three rules do not fit a table and are functions below: the retired Curve Module lives in the
repeating groups 5000-501E, overlays repeat over groups 6000-601E, and the Raw Data Module keeps its payload in private attributes, so
when it is present (Creator Version UID) every private attribute must be signed too.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset

__all__ = ["CREATOR_PROFILE_KEYWORDS", "REQUIRED_KEYWORDS", "creator_tags_present", "creator_requires"]

#: PS3.15 C.2 a./c.: a Creator signature that leaves out any of these is not one.
REQUIRED_KEYWORDS: tuple[str, ...] = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")

#: module -> keywords; the module names are PS3.3's.
_MODULES: dict[str, tuple[str, ...]] = {
    "SOP Common (identity, creation)": (
        "SOPClassUID", "SOPInstanceUID", "InstanceCreationDate", "InstanceCreationTime",
    ),
    "General Study / General Series (UIDs)": ("StudyInstanceUID", "SeriesInstanceUID"),
    "General Equipment": (
        "Manufacturer", "InstitutionName", "InstitutionAddress", "StationName",
        "InstitutionalDepartmentName", "InstitutionalDepartmentTypeCodeSequence",
        "ManufacturerModelName", "DeviceSerialNumber", "SoftwareVersions", "GantryID", "UDISequence",
        "DeviceUID", "SpatialResolution", "DateOfLastCalibration", "TimeOfLastCalibration",
        "PixelPaddingValue",
    ),
    "Graphic Annotation": ("GraphicAnnotationSequence",),
    "General Image": (
        "InstanceNumber", "PatientOrientation", "ContentDate", "ContentTime", "ImageType",
        "AcquisitionNumber", "AcquisitionDate", "AcquisitionTime", "AcquisitionDateTime",
        "ImagesInAcquisition", "ImageComments", "QualityControlImage", "BurnedInAnnotation",
        "RecognizableVisualFeatures", "LossyImageCompression", "LossyImageCompressionRatio",
        "LossyImageCompressionMethod", "IconImageSequence", "PresentationLUTShape",
        "IrradiationEventUID", "RealWorldValueMappingSequence", "ImageLaterality",
        "AnatomicRegionSequence", "PrimaryAnatomicStructureSequence",
    ),
    "Image Pixel": (
        "SamplesPerPixel", "PhotometricInterpretation", "Rows", "Columns", "BitsAllocated",
        "BitsStored", "HighBit", "PixelRepresentation", "PlanarConfiguration", "PixelAspectRatio",
        "SmallestImagePixelValue", "LargestImagePixelValue",
        "RedPaletteColorLookupTableDescriptor", "GreenPaletteColorLookupTableDescriptor",
        "BluePaletteColorLookupTableDescriptor", "RedPaletteColorLookupTableData",
        "GreenPaletteColorLookupTableData", "BluePaletteColorLookupTableData", "ICCProfile",
        "ColorSpace", "PixelData", "PixelDataProviderURL", "PixelPaddingRangeLimit",
        "ExtendedOffsetTable", "ExtendedOffsetTableLengths",
        # Floating Point / Double Floating Point Image Pixel: the pixels under another tag.
        "FloatPixelData", "DoubleFloatPixelData",
    ),
    "SR Document General": (
        "PreliminaryFlag", "CompletionFlag", "CompletionFlagDescription", "VerificationFlag",
        "VerifyingObserverSequence", "AuthorObserverSequence", "ParticipantSequence",
        "CustodialOrganizationSequence", "PredecessorDocumentsSequence",
        "IdenticalDocumentsSequence", "ReferencedRequestSequence", "PerformedProcedureCodeSequence",
        "CurrentRequestedProcedureEvidenceSequence", "PertinentOtherEvidenceSequence",
        "ReferencedInstanceSequence",
    ),
    "SR Document Content": (
        "ValueType", "ConceptNameCodeSequence", "ContinuityOfContent", "ContentTemplateSequence",
        "ObservationDateTime", "ObservationUID", "ContentSequence",
    ),
    "Waveform / Waveform Annotation": (
        "WaveformSequence", "WaveformDataDisplayScale", "WaveformDisplayBackgroundCIELabValue",
        "WaveformPresentationGroupSequence", "WaveformAnnotationSequence",
    ),
    "Multi-frame Functional Groups": (
        "SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence", "NumberOfFrames",
        "StereoPairsPresent", "ConcatenationFrameOffsetNumber", "RepresentativeFrameNumber",
        "ConcatenationUID", "SOPInstanceUIDOfConcatenationSource", "InConcatenationNumber",
        "InConcatenationTotalNumber",
    ),
    "Enhanced MR Image": (
        "AcquisitionDuration", "ReferencedRawDataSequence", "ReferencedWaveformSequence",
        "ReferencedImageEvidenceSequence", "SourceImageEvidenceSequence",
        "ReferencedPresentationStateSequence", "ContentQualification", "ResonantNucleus",
        "KSpaceFiltering", "MagneticFieldStrength", "ApplicableSafetyStandardAgency",
        "ApplicableSafetyStandardDescription", "IsocenterPosition", "B1rms", "PixelPresentation",
        "VolumetricProperties", "VolumeBasedCalculationTechnique", "ComplexImageComponent",
        "AcquisitionContrast", "FunctionalSettlingPhaseFramesPresent", "ViewCodeSequence",
        "SliceProgressionDirection",
    ),
    "MR Spectroscopy": (
        "TransmitterFrequency", "SpectralWidth", "ChemicalShiftReference",
        "VolumeLocalizationTechnique", "VolumeLocalizationSequence", "Decoupling",
        "DecoupledNucleus", "DecouplingFrequency", "DecouplingMethod",
        "DecouplingChemicalShiftReference", "TimeDomainFiltering", "NumberOfZeroFills",
        "BaselineCorrection", "FrequencyCorrection", "FirstOrderPhaseCorrection",
        "WaterReferencedPhaseCorrection", "SpectroscopyAcquisitionDataColumns",
        "SpectroscopyAcquisitionOutOfPlanePhaseSteps", "SpectroscopyAcquisitionPhaseRows",
        "SpectroscopyAcquisitionPhaseColumns", "NumberOfKSpaceTrajectories",
"DataPointRows", "DataPointColumns", "SignalDomainColumns",
        "DataRepresentation", "SpectroscopyData", "FirstOrderPhaseCorrectionAngle",
        "WaterReferenceAcquisition",
    ),
    "Raw Data": ("ContentLabel", "ContentDescription", "CreatorVersionUID"),
    "Enhanced CT Image": ("MultienergyCTAcquisition",),
    "Enhanced XA/XRF Image": (
        "PlanesInAcquisition", "PlaneIdentification", "AcquisitionProtocolName",
        "AcquisitionProtocolDescription", "ScanOptions", "PatientGantryRelationshipCodeSequence",
        "ExaminedBodyThickness", "ReferencedOtherPlaneSequence",
    ),
    "Segmentation Image": (
        "ImageOrientationSlide", "SegmentationType", "SegmentationFractionalType",
        "MaximumFractionalValue", "SegmentsOverlap", "SegmentSequence",
    ),
    "Encapsulated Document": (
        "SourceInstanceSequence", "DocumentTitle", "DocumentClassCodeSequence",
        "HL7InstanceIdentifier", "MIMETypeOfEncapsulatedDocument", "ListOfMIMETypes",
        "EncapsulatedDocument", "EncapsulatedDocumentLength",
    ),
    "X-Ray 3D Image": ("SourceIrradiationEventSequence",),
    "Enhanced US Image": (
        "DimensionOrganizationType", "PositionMeasuringDeviceUsed", "RescaleIntercept",
        "RescaleSlope", "SourceImageSequence", "ReferencedImageSequence", "NumberOfStages",
        "StageNumber", "StageCodeSequence", "EventTimerSequence", "TransducerData",
        "TransducerGeometryCodeSequence", "TransducerBeamSteeringCodeSequence",
        "TransducerApplicationCodeSequence", "ProcessingFunction", "MechanicalIndex",
        "BoneThermalIndex", "CranialThermalIndex", "SoftTissueThermalIndex", "DepthsOfFocus",
        "DepthOfScanField",
    ),
    "Surface Segmentation / Surface Mesh": (
        "AlternateContentDescriptionSequence", "ContentCreatorName",
        "ContentCreatorIdentificationCodeSequence", "NumberOfSurfaces", "SurfaceSequence",
    ),
    "Structured Display (+ Annotation, Image Box)": (
        "PresentationCreationDate", "PresentationCreationTime", "NumberOfScreens",
        "NominalScreenDefinitionSequence", "StructuredDisplayBackgroundCIELabValue",
        "EmptyImageBoxCIELabValue", "HangingProtocolName", "HangingProtocolCreator",
        "StructuredDisplayTextBoxSequence", "StructuredDisplayImageBoxSequence",
        "ImageBoxSynchronizationSequence",
    ),
    "Implant Template / Assembly / Group": (
        "FrameOfReferenceUID", "ImplantName", "ImplantSize", "ImplantPartNumber",
        "ImplantTemplateVersion", "ReplacedImplantTemplateSequence", "ImplantType",
        "OriginalImplantTemplateSequence", "DerivationImplantTemplateSequence", "EffectiveDateTime",
        "ImplantTargetAnatomySequence", "NotificationFromManufacturerSequence",
        "InformationFromManufacturerSequence", "ImplantRegulatoryDisapprovalCodeSequence",
        "OverallTemplateSpatialTolerance", "MaterialsCodeSequence", "CoatingMaterialsCodeSequence",
        "ImplantTypeCodeSequence", "FixationMethodCodeSequence", "ImplantAssemblyTemplateName",
        "ImplantAssemblyTemplateIssuer", "ImplantAssemblyTemplateVersion",
        "ReplacedImplantAssemblyTemplateSequence", "ImplantAssemblyTemplateType",
        "OriginalImplantAssemblyTemplateSequence", "DerivationImplantAssemblyTemplateSequence",
        "ImplantAssemblyTemplateTargetAnatomySequence", "ProcedureTypeCodeSequence",
        "SurgicalTechnique", "ComponentTypesSequence", "ComponentAssemblySequence",
        "ImplantTemplateGroupName", "ImplantTemplateGroupDescription", "ImplantTemplateGroupIssuer",
        "ImplantTemplateGroupVersion", "ReplacedImplantTemplateGroupSequence",
        "ImplantTemplateGroupTargetAnatomySequence", "ImplantTemplateGroupMembersSequence",
        "ImplantTemplateGroupVariationDimensionSequence",
    ),
    "Point Cloud": (
        "SurfacePointsSequence", "SurfacePointPresentationValueData",
        "SurfacePointColorCIELabValueData",
    ),
    "Enhanced Mammography Image": (
        "PositionerMotion", "PositionerType", "KVP", "XRayTubeCurrentInmA", "ExposureTimeInms",
        "ExposureInmAs", "FocalSpots", "AnodeTargetMaterial", "BodyPartThickness",
        "CompressionForce", "CompressionPressure", "CompressionContactArea", "PaddleDescription",
        "ExposureControlMode", "ExposureControlModeDescription", "OrganDose", "EntranceDoseInmGy",
        "EntranceDoseDerivation", "TypeOfDetectorMotion",
    ),
    "Tractography Results": ("TrackSetSequence",),
    "Volumetric Graphic Annotation": (
        "VolumetricAnnotationSequence", "VolumetricPresentationInputAnnotationSequence",
    ),
}

#: every keyword of the table, in table order, duplicates removed
CREATOR_PROFILE_KEYWORDS: tuple[str, ...] = tuple(dict.fromkeys(k for ks in _MODULES.values() for k in ks))


def _tags(keywords: Iterable[str]) -> frozenset[int]:
    tags = {tag_for_keyword(k) for k in keywords}
    missing = [k for k in keywords if tag_for_keyword(k) is None]
    if missing:  # a typo here would silently weaken the profile: fail at import instead
        raise RuntimeError(f"unknown DICOM keywords in the Creator profile table: {missing}")
    return frozenset(t for t in tags if t is not None)


_PROFILE_TAGS = _tags(CREATOR_PROFILE_KEYWORDS)
REQUIRED_TAGS = _tags(REQUIRED_KEYWORDS)
_CREATOR_VERSION_UID = 0x00089123

# Overlay Plane Module (PS3.3 C.9.2): repeating groups 6000-601E (even), these elements:
# Overlay Rows, Columns, Description, Type, Subtype, Origin, Bits Allocated, Bit Position,
# ROI Area, ROI Mean, ROI Standard Deviation, Overlay Label, Overlay Data.
_OVERLAY_ELEMENTS = frozenset(
    {0x0010, 0x0011, 0x0022, 0x0040, 0x0045, 0x0050, 0x0100, 0x0102, 0x1301, 0x1302, 0x1303, 0x1500, 0x3000}
)

# Retired Curve Module (PS3.3 2004 C.10.2): repeating groups 5000-501E, these elements.
_CURVE_ELEMENTS = frozenset(
    {0x0005, 0x0010, 0x0103, 0x3000, 0x0022, 0x0030, 0x0040, 0x0104, 0x0105, 0x0106, 0x0110, 0x0112,
     0x0114, 0x2500, 0x2600}
)


def creator_requires(tag: int, *, raw_data_present: bool) -> bool:
    """True when PS3.15 C.2 requires ``tag``, if present at the top level, in a Creator signature."""
    if tag in _PROFILE_TAGS:
        return True
    group, element = tag >> 16, tag & 0xFFFF
    if 0x5000 <= group <= 0x501E and group % 2 == 0 and element in _CURVE_ELEMENTS:
        return True
    if 0x6000 <= group <= 0x601E and group % 2 == 0 and element in _OVERLAY_ELEMENTS:
        return True
    # Raw Data Module: its payload is private attributes; element 00xx are private creators.
    return raw_data_present and group % 2 == 1 and group > 0x0008


def creator_tags_present(ds: Dataset) -> list[int]:
    """The top-level tags of ``ds`` that a Creator RSA signature must cover, in ascending order."""
    raw_data_present = _CREATOR_VERSION_UID in ds
    return sorted(int(t) for t in ds.keys() if creator_requires(int(t), raw_data_present=raw_data_present))
