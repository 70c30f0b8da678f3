"""Stage 4: validation on emulated MCU inference."""
