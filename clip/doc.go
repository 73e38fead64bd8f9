// Package clip holds what the embed stage needs to turn image files into
// CLIP image embeddings:
//
//   - decoding and CLIP preprocessing exactly as open_clip does it through
//     torchvision and PIL (Preprocess, beside the plain PreprocessRef it is
//     tested against): resize the shorter side with PIL's antialiased
//     bicubic filter (fixed-point, two passes, 8-bit between them), centre
//     crop, convert to RGB, normalise with the CLIP mean and std;
//   - hand-written ONNX models (protobuf encoded by hand, no protobuf
//     library): TinyEncoder, a CLIP-shaped [N,3,S,S] -> [N,D] average-pool +
//     MatMul encoder for tests and the quickstart, and ViTEncoder, a ViT-B/32
//     shaped encoder with seeded weights for benchmarks;
//
// Running the models is clip/ort's job (ONNX Runtime through cgo); this
// package is pure Go and knows nothing of configs, ranks or stages.
package clip
