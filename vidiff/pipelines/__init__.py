"""Generation: a diffusion stage (stage), pipeline folders on disk (pipeline_folder), a cascade of stages
(cascade) and its assembly from stage exports (assemble), and the text-to-video pipeline (text_to_video)."""
