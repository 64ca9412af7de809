"""The ``trrg`` commands, one module each with ``main(argv) -> int``: they parse arguments, call the
library (``trrg.assembly``, ``trrg.trainers``, ``trrg.processing``, ``trrg.evaluation``,
``trrg.space``) and print; no command holds logic another command or a user would need."""
