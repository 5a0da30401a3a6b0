print("pyannote diarization")
