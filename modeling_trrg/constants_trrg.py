"""The disease vocabulary and prompts (no imports: cheap for the labeler; part of the hub bundle)."""

# The 14 CheXpert observations, in the order of the CheXpert labeler's output. Everything that
# indexes diseases (prompt bank rows, clue slots, label vectors, metrics) uses this order.
CHEXPERT_OBSERVATIONS: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)

# Positive and negated disease prompts (already in the project's cleaned text form: lower case,
# " ." sentence end). Stage 1 contrasts the image with both; the stage-2 prompt bank stores their
# embeddings. The phrasing is ours; the paper describes "disease prompts" without listing them.
DEFAULT_DISEASE_PROMPTS: dict[str, tuple[str, str]] = {
    "No Finding": ("there is no acute cardiopulmonary abnormality .", "there is an acute cardiopulmonary abnormality ."),
    "Enlarged Cardiomediastinum": ("the cardiomediastinal silhouette is enlarged .", "the cardiomediastinal silhouette is normal ."),
    "Cardiomegaly": ("there is cardiomegaly .", "there is no cardiomegaly ."),
    "Lung Opacity": ("there is a lung opacity .", "there is no lung opacity ."),
    "Lung Lesion": ("there is a lung nodule or mass .", "there is no lung nodule or mass ."),
    "Edema": ("there is pulmonary edema .", "there is no pulmonary edema ."),
    "Consolidation": ("there is consolidation .", "there is no consolidation ."),
    "Pneumonia": ("there is pneumonia .", "there is no pneumonia ."),
    "Atelectasis": ("there is atelectasis .", "there is no atelectasis ."),
    "Pneumothorax": ("there is a pneumothorax .", "there is no pneumothorax ."),
    "Pleural Effusion": ("there is a pleural effusion .", "there is no pleural effusion ."),
    "Pleural Other": ("there is pleural thickening .", "there is no pleural thickening ."),
    "Fracture": ("there is a fracture .", "there is no fracture ."),
    "Support Devices": ("there is a support device .", "there is no support device ."),
}
