//go:build !(linux && (amd64 || arm64))

package clip

// JPEGEnv names the environment variable that, set to "go", makes Decode
// use Go's image/jpeg even when libjpeg-turbo is present.
const JPEGEnv = "HPCRUN_JPEG"

// JPEGDecoder names the decoder Decode uses for YCbCr and greyscale JPEGs.
func JPEGDecoder() string { return "go (libjpeg-turbo is used on linux/amd64 and linux/arm64 only)" }

func decodeTurbo(data []byte) (*Picture, error, bool) { return nil, nil, false }
