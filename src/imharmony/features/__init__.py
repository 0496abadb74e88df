"""imharmony.features"""
