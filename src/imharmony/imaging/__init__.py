"""imharmony.imaging"""
