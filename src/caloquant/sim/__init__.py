"""Shower simulation: Geant4 and GFlash engines for the W/Si calorimeter."""
