"""imharmony.physics"""
