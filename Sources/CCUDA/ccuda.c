#include "ccuda.h"
