"""tinyprec.emulator"""
