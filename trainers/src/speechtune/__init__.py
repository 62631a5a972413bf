"""SpeechTune: fine-tune speech-recognition models from one FinetuneJob spec."""
