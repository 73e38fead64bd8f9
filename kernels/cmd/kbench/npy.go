package main

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"

	"hpcrun/kernels"
)

var (
	reDescr = regexp.MustCompile(`'descr':\s*'([^']*)'`)
	reOrder = regexp.MustCompile(`'fortran_order':\s*(True|False)`)
	reShape = regexp.MustCompile(`'shape':\s*\((\d+),\s*(\d+)\)`)
)

// readNpy reads a 2-D C-order little-endian float32 or float16 .npy file.
func readNpy(path string) (kernels.Matrix, error) {
	f, err := os.Open(path)
	if err != nil {
		return kernels.Matrix{}, err
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 1<<20)
	var pre [10]byte
	if _, err := io.ReadFull(br, pre[:]); err != nil {
		return kernels.Matrix{}, err
	}
	if string(pre[:6]) != "\x93NUMPY" {
		return kernels.Matrix{}, fmt.Errorf("%s: not a .npy file", path)
	}
	var hlen int
	if pre[6] == 1 {
		hlen = int(binary.LittleEndian.Uint16(pre[8:10]))
	} else {
		var b2 [2]byte
		if _, err := io.ReadFull(br, b2[:]); err != nil {
			return kernels.Matrix{}, err
		}
		hlen = int(binary.LittleEndian.Uint32(append(pre[8:10:10], b2[:]...)))
	}
	h := make([]byte, hlen)
	if _, err := io.ReadFull(br, h); err != nil {
		return kernels.Matrix{}, err
	}
	descr := reDescr.FindSubmatch(h)
	order := reOrder.FindSubmatch(h)
	shape := reShape.FindSubmatch(h)
	if descr == nil || order == nil || shape == nil || string(order[1]) != "False" {
		return kernels.Matrix{}, fmt.Errorf("%s: need a 2-D C-order array, header %q", path, h)
	}
	rows, _ := strconv.Atoi(string(shape[1]))
	dim, _ := strconv.Atoi(string(shape[2]))
	switch string(descr[1]) {
	case "<f4":
		d := make([]float32, rows*dim)
		err = binary.Read(br, binary.LittleEndian, d)
		return kernels.F32Matrix(d, rows, dim), err
	case "<f2":
		d := make([]uint16, rows*dim)
		err = binary.Read(br, binary.LittleEndian, d)
		return kernels.F16Matrix(d, rows, dim), err
	}
	return kernels.Matrix{}, fmt.Errorf("%s: dtype %s (want <f4 or <f2)", path, descr[1])
}

func writeNpy(path, descr string, rows, cols int, data any) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	h := fmt.Sprintf("{'descr': '%s', 'fortran_order': False, 'shape': (%d, %d), }", descr, rows, cols)
	for (10+len(h)+1)%64 != 0 {
		h += " "
	}
	h += "\n"
	w.WriteString("\x93NUMPY\x01\x00")
	binary.Write(w, binary.LittleEndian, uint16(len(h)))
	w.WriteString(h)
	if err := binary.Write(w, binary.LittleEndian, data); err != nil {
		f.Close()
		return err
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func writeNpyF32(path string, d []float32, rows, cols int) error {
	return writeNpy(path, "<f4", rows, cols, d)
}

func writeNpyI64(path string, d []int64, rows, cols int) error {
	return writeNpy(path, "<i8", rows, cols, d)
}
