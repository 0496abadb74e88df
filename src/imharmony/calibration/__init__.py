"""imharmony.calibration"""
