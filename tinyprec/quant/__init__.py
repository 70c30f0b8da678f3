"""tinyprec.quant"""
