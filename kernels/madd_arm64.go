package kernels

// madd32 is a·b + c rounded once: the arm64 compiler fuses the float32
// multiply-add into one FMADDS, so kern1 needs no software FMA here.
func madd32(a, b, c float32) float32 { return a*b + c }
