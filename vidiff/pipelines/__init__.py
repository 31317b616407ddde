"""Generation: a diffusion stage (stage), pipeline folders on disk (pipeline_folder), and the
text-to-video pipeline (text_to_video)."""
