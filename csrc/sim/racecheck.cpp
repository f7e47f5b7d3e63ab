// The emulator's race detector: placeholder of the controls until the detector lands.
#include "sim/control.h"

namespace simt {

bool racecheck_built() { return false; }
void set_racecheck(bool) {}
bool racecheck() { return false; }

}  // namespace simt
