"""imharmony.scale"""
