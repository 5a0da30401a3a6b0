print("transcription backend")
