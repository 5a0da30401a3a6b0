print("whisperx asr")
