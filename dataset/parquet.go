package dataset

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/parquet-go/parquet-go"
)

// ParquetRows is the row count a parquet file's footer declares.
func ParquetRows(path string) (int64, error) {
	f, pf, err := openParquet(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return pf.NumRows(), nil
}

func openParquet(path string) (*os.File, *parquet.File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	pf, err := parquet.OpenFile(f, st.Size(), parquet.SkipPageIndex(true), parquet.SkipBloomFilters(true))
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("%s: not a readable parquet file: %w", path, err)
	}
	return f, pf, nil
}

// ReadIDColumn reads an id column of a clip-retrieval metadata parquet
// file: an integer column (INT32/INT64, plain or dictionary encoded, any
// codec), or a string column of digits such as the 9-digit webdataset keys
// clip-retrieval writes ("000123456" -> 123456). Nulls are an error.
func ReadIDColumn(path, column string) (ids []int64, err error) {
	f, pf, err := openParquet(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	defer func() { // a corrupt file must not take the process down
		if r := recover(); r != nil {
			ids, err = nil, fmt.Errorf("%s: corrupt parquet data in column %q: %v", path, column, r)
		}
	}()
	leaf, ok := pf.Schema().Lookup(column)
	if !ok {
		var names []string
		for _, c := range pf.Schema().Fields() {
			names = append(names, c.Name())
		}
		return nil, fmt.Errorf("%s: no column %q (columns: %v)", path, column, names)
	}
	ids = make([]int64, 0, pf.NumRows())
	vals := make([]parquet.Value, 4096)
	for _, rg := range pf.RowGroups() {
		pages := rg.ColumnChunks()[leaf.ColumnIndex].Pages()
		for {
			page, err := pages.ReadPage()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				pages.Close()
				return nil, fmt.Errorf("%s: column %q: %w", path, column, err)
			}
			r := page.Values()
			for {
				n, err := r.ReadValues(vals)
				for _, v := range vals[:n] {
					id, err := valueID(v)
					if err != nil {
						parquet.Release(page)
						pages.Close()
						return nil, fmt.Errorf("%s: column %q, row %d: %w", path, column, len(ids), err)
					}
					ids = append(ids, id)
				}
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					parquet.Release(page)
					pages.Close()
					return nil, fmt.Errorf("%s: column %q: %w", path, column, err)
				}
			}
			parquet.Release(page)
		}
		pages.Close()
	}
	if int64(len(ids)) != pf.NumRows() {
		return nil, fmt.Errorf("%s: column %q has %d values but the file declares %d rows", path, column, len(ids), pf.NumRows())
	}
	return ids, nil
}

func valueID(v parquet.Value) (int64, error) {
	switch v.Kind() {
	case parquet.Int64:
		return v.Int64(), nil
	case parquet.Int32:
		return int64(v.Int32()), nil
	case parquet.ByteArray, parquet.FixedLenByteArray:
		s := string(v.ByteArray())
		id, err := strconv.ParseInt(s, 10, 64)
		if err != nil || id < 0 {
			return 0, fmt.Errorf("id %q is not a non-negative integer", s)
		}
		return id, nil
	}
	if v.IsNull() {
		return 0, errors.New("id is null")
	}
	return 0, fmt.Errorf("id column has type %v, want an integer or a digit string", v.Kind())
}

// MetadataRow is one row of the metadata parquet files synth writes, in the
// shape of clip-retrieval's output.
type MetadataRow struct {
	ImagePath int64  `parquet:"image_path"`
	Caption   string `parquet:"caption,dict"`
	URL       string `parquet:"url"`
	Key       string `parquet:"key"`
}

// WriteMetadata writes rows as a zstd-compressed parquet file, atomically.
func WriteMetadata(path string, rows []MetadataRow) error {
	f, err := CreateAtomic(path)
	if err != nil {
		return err
	}
	w := parquet.NewGenericWriter[MetadataRow](f, parquet.Compression(&parquet.Zstd))
	if _, err := w.Write(rows); err != nil {
		f.Abort()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := w.Close(); err != nil {
		f.Abort()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return f.Commit()
}
