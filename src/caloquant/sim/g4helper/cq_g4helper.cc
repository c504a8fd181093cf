// caloquant Geant4 helper: the data-free electromagnetic processes and the calorimeter scoring.
//
// Why C++: the geant4-pybind wheel does not bind individual EM processes and models, and a
// per-step Python callback is about 4x slower than a C++ sensitive detector. The wheel's
// shared object exports these classes, so this small library is compiled against matching
// headers and resolves its Geant4 symbols from the already loaded bindings (Python imports
// them with RTLD_GLOBAL). The run manager itself is set up from Python: this file only
// builds processes, attaches sensitive detectors and hands out per-event sums through a
// plain C interface (ctypes).
//
// This product includes software developed by Members of the Geant4 Collaboration
// (http://cern.ch/geant4).

#include "G4PhysicsListHelper.hh"
#include "G4Electron.hh"
#include "G4Positron.hh"
#include "G4Gamma.hh"
#include "G4eMultipleScattering.hh"
#include "G4UrbanMscModel.hh"
#include "G4WentzelVIModel.hh"
#include "G4CoulombScattering.hh"
#include "G4eCoulombScatteringModel.hh"
#include "G4eIonisation.hh"
#include "G4eBremsstrahlung.hh"
#include "G4eBremsstrahlungRelModel.hh"
#include "G4eplusAnnihilation.hh"
#include "G4PhotoElectricEffect.hh"
#include "G4PEEffectFluoModel.hh"
#include "G4ComptonScattering.hh"
#include "G4KleinNishinaCompton.hh"
#include "G4KleinNishinaModel.hh"
#include "G4GammaConversion.hh"
#include "G4BetheHeitler5DModel.hh"
#include "G4PairProductionRelModel.hh"
#include "G4EmParameters.hh"
#include "G4VSensitiveDetector.hh"
#include "G4SDManager.hh"
#include "G4LogicalVolumeStore.hh"
#include "G4LogicalVolume.hh"
#include "G4VPhysicalVolume.hh"
#include "G4Step.hh"
#include "G4StepPoint.hh"
#include "G4Track.hh"
#include "G4VTouchable.hh"
#include "G4SystemOfUnits.hh"
#include "G4PhysicalConstants.hh"

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

namespace {

// ---- scoring state (one Geant4 session per process, serial run manager) --------------------
struct Grid {
  int nx = 25, ny = 25, nz = 25;
  double pitch = 5.1 * mm;
};
Grid gGrid;
std::vector<double> gCells;  // nx*ny*nz, MeV, index (ix*ny + iy)*nz + iz
double gSi = 0, gPassive = 0, gEscaped = 0, gSiOutside = 0;  // MeV
long gSteps = 0;

inline bool StartsWith(const G4String& s, const char* p) { return s.rfind(p, 0) == 0; }

// Energy a particle carries out of the calorimeter: kinetic energy, plus the annihilation
// energy a positron would have released (its mass was taken from a photon inside).
inline double CarriedOut(const G4Track* trk, const G4StepPoint* post) {
  double e = post->GetKineticEnergy();
  if (trk->GetDefinition() == G4Positron::Definition()) e += 2 * electron_mass_c2;
  return e;
}

// Leaving the stack: the step ends on a boundary and the next volume is the world (or none).
inline bool Leaves(const G4StepPoint* post) {
  auto st = post->GetStepStatus();
  if (st == fWorldBoundary) return true;
  if (st != fGeomBoundary) return false;
  const G4VPhysicalVolume* pv = post->GetPhysicalVolume();
  return pv == nullptr || !StartsWith(pv->GetName(), "cq_");
}

class ActiveSD : public G4VSensitiveDetector {
 public:
  explicit ActiveSD(const G4String& n) : G4VSensitiveDetector(n) {}
  G4bool ProcessHits(G4Step* step, G4TouchableHistory*) override {
    ++gSteps;
    const double edep = step->GetTotalEnergyDeposit();
    const G4StepPoint* pre = step->GetPreStepPoint();
    const G4StepPoint* post = step->GetPostStepPoint();
    if (edep > 0) {
      gSi += edep;
      // energy is deposited along the step: score it at the step's midpoint
      const G4ThreeVector p = 0.5 * (pre->GetPosition() + post->GetPosition());
      const double half_x = 0.5 * gGrid.nx * gGrid.pitch, half_y = 0.5 * gGrid.ny * gGrid.pitch;
      const int ix = (int)std::floor((p.x() + half_x) / gGrid.pitch);
      const int iy = (int)std::floor((p.y() + half_y) / gGrid.pitch);
      const int iz = pre->GetTouchable()->GetCopyNumber();
      if (ix >= 0 && ix < gGrid.nx && iy >= 0 && iy < gGrid.ny && iz >= 0 && iz < gGrid.nz) {
        gCells[((size_t)ix * gGrid.ny + iy) * gGrid.nz + iz] += edep;
      } else {
        gSiOutside += edep;
      }
    }
    if (Leaves(post)) {
      gEscaped += CarriedOut(step->GetTrack(), post);
      step->GetTrack()->SetTrackStatus(fStopAndKill);
    }
    return true;
  }
};

class PassiveSD : public G4VSensitiveDetector {
 public:
  explicit PassiveSD(const G4String& n) : G4VSensitiveDetector(n) {}
  G4bool ProcessHits(G4Step* step, G4TouchableHistory*) override {
    ++gSteps;
    gPassive += step->GetTotalEnergyDeposit();
    const G4StepPoint* post = step->GetPostStepPoint();
    if (Leaves(post)) {
      gEscaped += CarriedOut(step->GetTrack(), post);
      step->GetTrack()->SetTrackStatus(fStopAndKill);
    }
    return true;
  }
};

}  // namespace

extern "C" {

// Bumped whenever the C interface below changes.
int cq_abi_version() { return 1; }

// Data-free EM processes for e-, e+ and gamma (plus transportation for every particle).
//   msc:     0 Urban over the whole range; 1 WentzelVI + single Coulomb scattering
//   conv:    0 BetheHeitler5D; 1 PairProductionRel over the whole range
//            (G4BetheHeitlerModel is not exported by the wheel)
//   compton: 0 KleinNishinaCompton; 1 KleinNishinaModel (shell binding, Doppler)
// Bremsstrahlung: eBremsstrahlungRelModel over the whole range (the Seltzer-Berger model
// used below 1 GeV by the standard lists needs the G4LEDATA data set).
int cq_construct_em(int msc, int conv, int compton) {
  G4PhysicsListHelper* ph = G4PhysicsListHelper::GetPhysicsListHelper();
  ph->AddTransportation();

  G4ParticleDefinition* leptons[2] = {G4Electron::Definition(), G4Positron::Definition()};
  for (G4ParticleDefinition* p : leptons) {
    auto* ms = new G4eMultipleScattering();
    if (msc == 1) {
      ms->SetEmModel(new G4WentzelVIModel());
      auto* ss = new G4CoulombScattering();
      ss->SetEmModel(new G4eCoulombScatteringModel());
      ph->RegisterProcess(ms, p);
      ph->RegisterProcess(ss, p);
    } else {
      ms->SetEmModel(new G4UrbanMscModel());
      ph->RegisterProcess(ms, p);
    }
    ph->RegisterProcess(new G4eIonisation(), p);
    auto* brem = new G4eBremsstrahlung();
    // index 0 is capped at 1 GeV by the process, index 1 covers the rest: same model in both
    brem->SetEmModel(new G4eBremsstrahlungRelModel(), 0);
    brem->SetEmModel(new G4eBremsstrahlungRelModel(), 1);
    ph->RegisterProcess(brem, p);
    if (p == G4Positron::Definition()) ph->RegisterProcess(new G4eplusAnnihilation(), p);
  }

  G4ParticleDefinition* g = G4Gamma::Definition();
  auto* pe = new G4PhotoElectricEffect();
  pe->SetEmModel(new G4PEEffectFluoModel());
  ph->RegisterProcess(pe, g);
  auto* cs = new G4ComptonScattering();
  if (compton == 1) cs->SetEmModel(new G4KleinNishinaModel());
  else cs->SetEmModel(new G4KleinNishinaCompton());
  ph->RegisterProcess(cs, g);
  auto* gc = new G4GammaConversion();
  if (conv == 1) {
    gc->SetEmModel(new G4PairProductionRelModel());
  } else {
    auto* bh5 = new G4BetheHeitler5DModel();
    gc->SetEmModel(bh5);
  }
  ph->RegisterProcess(gc, g);
  return 0;
}

// Grid of pads: nx x ny cells of pitch_mm centred on the beam axis, nz layers (the active
// volumes' copy numbers). Active logical volumes are those named "cq_active*", passive ones
// "cq_passive*". Returns the number of volumes made sensitive, or -1 when none was found.
int cq_attach_scoring(int nx, int ny, int nz, double pitch_mm) {
  gGrid.nx = nx;
  gGrid.ny = ny;
  gGrid.nz = nz;
  gGrid.pitch = pitch_mm * mm;
  gCells.assign((size_t)nx * ny * nz, 0.0);
  auto* sdm = G4SDManager::GetSDMpointer();
  auto* active = new ActiveSD("cq_active_sd");
  auto* passive = new PassiveSD("cq_passive_sd");
  sdm->AddNewDetector(active);
  sdm->AddNewDetector(passive);
  int found = 0, nactive = 0;
  for (G4LogicalVolume* lv : *G4LogicalVolumeStore::GetInstance()) {
    if (StartsWith(lv->GetName(), "cq_active")) { lv->SetSensitiveDetector(active); ++found; ++nactive; }
    else if (StartsWith(lv->GetName(), "cq_passive")) { lv->SetSensitiveDetector(passive); ++found; }
  }
  return nactive > 0 ? found : -1;
}

// Copy the finished event out (cells in GeV as float32; sums in GeV: silicon in the grid and
// outside it, passive material, energy carried out of the calorimeter; number of steps) and
// reset the accumulators for the next event.
void cq_take_event(float* cells, double* sums) {
  const size_t n = gCells.size();
  for (size_t i = 0; i < n; ++i) cells[i] = (float)(gCells[i] / GeV);
  std::memset(gCells.data(), 0, n * sizeof(double));
  sums[0] = gSi / GeV;
  sums[1] = gSiOutside / GeV;
  sums[2] = gPassive / GeV;
  sums[3] = gEscaped / GeV;
  sums[4] = (double)gSteps;
  gSi = gPassive = gEscaped = gSiOutside = 0;
  gSteps = 0;
}

void cq_reset_event() {
  std::fill(gCells.begin(), gCells.end(), 0.0);
  gSi = gPassive = gEscaped = gSiOutside = 0;
  gSteps = 0;
}

}  // extern "C"
