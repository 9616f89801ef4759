// Command schematic-oracle computes Talos Image Factory schematic IDs with the
// real gopkg.in/yaml.v3 (v3.0.1) encoder/decoder. It is the reference used to
// generate tests/vectors/schematic-ids.json.
//
// Usage:
//
//	schematic-oracle [-roundtrip] [-decoded] [-repeat N] < inputs.json > results.json
//	schematic-oracle -scalars < strings.json > emitted.json
//
// Default mode: stdin is a JSON array of strings, each a raw schematic document
// (YAML or JSON text). stdout is a JSON array of objects
//
//	{"input": ..., "ok": bool, "canonical": "...", "id": "<sha256 hex>", "error": "..."}
//
// (canonical/id only present when ok, error only when not ok).
//
// -roundtrip: additionally decode the canonical bytes again and compare with
// the first decoded value (nil and empty slices/maps are treated as equal, NaN
// equals NaN) and check that re-marshalling is byte-identical; adds
// "roundtrip_ok" and, on mismatch, "roundtrip_error".
//
// -decoded: additionally adds "decoded", a JSON rendition of the decoded
// struct (debugging aid; loses the int/string distinction of options values).
//
// -repeat N: marshal each decoded schematic N times; if the outputs differ
// (map key order depending on Go's randomised map iteration) the result gets
// "unstable": true.
//
// -scalars: stdin is a JSON array of strings; for each string s the output
// object is {"input": s, "output": yaml.Marshal(map[string]string{"k": s})}.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"reflect"
	"strings"

	"gopkg.in/yaml.v3"

	"bootfactory.test/schematic-oracle/schematic"
)

type result struct {
	Input          string `json:"input"`
	OK             bool   `json:"ok"`
	Canonical      string `json:"canonical,omitempty"`
	ID             string `json:"id,omitempty"`
	Error          string `json:"error,omitempty"`
	RoundtripOK    *bool  `json:"roundtrip_ok,omitempty"`
	RoundtripError string `json:"roundtrip_error,omitempty"`
	Unstable       bool   `json:"unstable,omitempty"`
	Decoded        any    `json:"decoded,omitempty"`
}

type scalarResult struct {
	Input  string `json:"input"`
	Output string `json:"output,omitempty"`
	Error  string `json:"error,omitempty"`
}

func main() {
	scalars := flag.Bool("scalars", false, "marshal map[string]string{\"k\": s} for each input string")
	roundtrip := flag.Bool("roundtrip", false, "re-decode the canonical output and compare")
	decoded := flag.Bool("decoded", false, "include a JSON rendition of the decoded struct")
	repeat := flag.Int("repeat", 1, "marshal each decoded schematic this many times and flag differing output as unstable")
	flag.Parse()

	if err := run(os.Stdin, os.Stdout, *scalars, *roundtrip, *decoded, *repeat); err != nil {
		fmt.Fprintln(os.Stderr, "schematic-oracle:", err)
		os.Exit(1)
	}
}

func run(r io.Reader, w io.Writer, scalars, roundtrip, decoded bool, repeat int) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}

	var inputs []string
	if err := json.Unmarshal(data, &inputs); err != nil {
		return fmt.Errorf("stdin must be a JSON array of strings: %w", err)
	}

	var out any

	if scalars {
		res := make([]scalarResult, 0, len(inputs))
		for _, in := range inputs {
			res = append(res, marshalScalar(in))
		}

		out = res
	} else {
		res := make([]result, 0, len(inputs))
		for _, in := range inputs {
			res = append(res, process(in, roundtrip, decoded, repeat))
		}

		out = res
	}

	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", " ")

	return enc.Encode(out)
}

func marshalScalar(s string) (res scalarResult) {
	res.Input = s

	defer func() {
		if r := recover(); r != nil {
			res.Output = ""
			res.Error = fmt.Sprintf("panic: %v", r)
		}
	}()

	b, err := yaml.Marshal(map[string]string{"k": s})
	if err != nil {
		res.Error = err.Error()

		return res
	}

	res.Output = string(b)

	return res
}

func process(in string, roundtrip, decoded bool, repeat int) (res result) {
	res.Input = in

	defer func() {
		if r := recover(); r != nil {
			res = result{Input: in, Error: fmt.Sprintf("panic: %v", r)}
		}
	}()

	s, err := schematic.Unmarshal([]byte(in))
	if err != nil {
		res.Error = err.Error()

		return res
	}

	canonical, err := s.Marshal()
	if err != nil {
		res.Error = "marshal: " + err.Error()

		return res
	}

	id, err := s.ID()
	if err != nil {
		res.Error = "id: " + err.Error()

		return res
	}

	res.OK = true
	res.Canonical = string(canonical)
	res.ID = id

	// Go randomises map iteration order; go-yaml sorts map keys, but its
	// comparator is not a strict total order for every key set (e.g. NaN
	// keys), in which case the output depends on iteration order.
	for i := 1; i < repeat; i++ {
		again, err := s.Marshal()
		if err != nil || !bytes.Equal(again, canonical) {
			res.Unstable = true

			break
		}
	}

	// The optional extras run under their own recover so that a bug in the
	// debugging helpers can never alter the oracle's primary result.
	if decoded {
		func() {
			defer func() {
				if r := recover(); r != nil {
					res.Decoded = fmt.Sprintf("panic while rendering decoded value: %v", r)
				}
			}()

			res.Decoded = jsonable(reflect.ValueOf(*s))
		}()
	}

	if roundtrip {
		func() {
			defer func() {
				if r := recover(); r != nil {
					ok := false
					res.RoundtripOK = &ok
					res.RoundtripError = fmt.Sprintf("panic during roundtrip check: %v", r)
				}
			}()

			ok, msg := checkRoundtrip(s, canonical)
			res.RoundtripOK = &ok
			res.RoundtripError = msg
		}()
	}

	return res
}

// opaque reports whether a struct type has unexported fields (e.g.
// time.Time); such values are compared/rendered as a whole.
func opaque(t reflect.Type) bool {
	for i := 0; i < t.NumField(); i++ {
		if t.Field(i).PkgPath != "" {
			return true
		}
	}

	return false
}

func checkRoundtrip(s *schematic.Schematic, canonical []byte) (bool, string) {
	s2, err := schematic.Unmarshal(canonical)
	if err != nil {
		return false, "re-decode failed: " + err.Error()
	}

	var problems []string

	if msg := diff(reflect.ValueOf(*s), reflect.ValueOf(*s2), "schematic"); msg != "" {
		problems = append(problems, msg)
	}

	again, err := s2.Marshal()
	if err != nil {
		problems = append(problems, "re-marshal failed: "+err.Error())
	} else if !bytes.Equal(again, canonical) {
		problems = append(problems, fmt.Sprintf("re-marshal differs: %q", again))
	}

	if len(problems) > 0 {
		return false, strings.Join(problems, "; ")
	}

	return true, ""
}

// diff compares two decoded values, treating nil and empty slices/maps as
// equal and NaN as equal to NaN. It returns "" when equal, otherwise a
// description of the first difference.
func diff(a, b reflect.Value, path string) string {
	if !a.IsValid() || !b.IsValid() {
		if a.IsValid() == b.IsValid() {
			return ""
		}

		return fmt.Sprintf("%s: %s vs %s", path, describe(a), describe(b))
	}

	if a.Kind() == reflect.Interface {
		if a.IsNil() {
			a = reflect.Value{}
		} else {
			a = a.Elem()
		}

		if b.Kind() == reflect.Interface {
			if b.IsNil() {
				b = reflect.Value{}
			} else {
				b = b.Elem()
			}
		}

		return diff(a, b, path)
	}

	if a.Type() != b.Type() {
		return fmt.Sprintf("%s: type %s (%s) vs %s (%s)", path, a.Type(), describe(a), b.Type(), describe(b))
	}

	switch a.Kind() { //nolint:exhaustive
	case reflect.Struct:
		if opaque(a.Type()) {
			if reflect.DeepEqual(a.Interface(), b.Interface()) {
				return ""
			}

			return fmt.Sprintf("%s: %s vs %s", path, describe(a), describe(b))
		}

		for i := 0; i < a.NumField(); i++ {
			if msg := diff(a.Field(i), b.Field(i), path+"."+a.Type().Field(i).Name); msg != "" {
				return msg
			}
		}

		return ""
	case reflect.Slice:
		if a.Len() != b.Len() {
			return fmt.Sprintf("%s: length %d vs %d", path, a.Len(), b.Len())
		}

		for i := 0; i < a.Len(); i++ {
			if msg := diff(a.Index(i), b.Index(i), fmt.Sprintf("%s[%d]", path, i)); msg != "" {
				return msg
			}
		}

		return ""
	case reflect.Map:
		if a.Len() != b.Len() {
			return fmt.Sprintf("%s: %d keys vs %d keys", path, a.Len(), b.Len())
		}

		iter := a.MapRange()
		for iter.Next() {
			bv := b.MapIndex(iter.Key())
			if !bv.IsValid() {
				return fmt.Sprintf("%s: key %#v missing after roundtrip", path, iter.Key().Interface())
			}

			if msg := diff(iter.Value(), bv, fmt.Sprintf("%s[%#v]", path, iter.Key().Interface())); msg != "" {
				return msg
			}
		}

		return ""
	case reflect.Float32, reflect.Float64:
		fa, fb := a.Float(), b.Float()
		if fa == fb || (math.IsNaN(fa) && math.IsNaN(fb)) {
			return ""
		}

		return fmt.Sprintf("%s: %v vs %v", path, fa, fb)
	default:
		if reflect.DeepEqual(a.Interface(), b.Interface()) {
			return ""
		}

		return fmt.Sprintf("%s: %s vs %s", path, describe(a), describe(b))
	}
}

func describe(v reflect.Value) string {
	if !v.IsValid() {
		return "<nil>"
	}

	return fmt.Sprintf("%#v", v.Interface())
}

// jsonable converts a decoded value into something encoding/json accepts:
// structs become objects keyed by their yaml names, map keys are formatted
// with %v, NaN/Inf floats become strings, TextMarshalers use their text.
func jsonable(v reflect.Value) any {
	if !v.IsValid() {
		return nil
	}

	if v.Kind() != reflect.Interface && v.Kind() != reflect.Ptr && v.CanInterface() {
		if s, ok := v.Interface().(fmt.Stringer); ok && v.Kind() == reflect.Int {
			return s.String()
		}
	}

	switch v.Kind() { //nolint:exhaustive
	case reflect.Interface, reflect.Ptr:
		if v.IsNil() {
			return nil
		}

		return jsonable(v.Elem())
	case reflect.Struct:
		if opaque(v.Type()) {
			return fmt.Sprintf("%T(%v)", v.Interface(), v.Interface())
		}

		m := map[string]any{}

		for i := 0; i < v.NumField(); i++ {
			name := strings.Split(v.Type().Field(i).Tag.Get("yaml"), ",")[0]
			if name == "" {
				name = v.Type().Field(i).Name
			}

			m[name] = jsonable(v.Field(i))
		}

		return m
	case reflect.Slice:
		if v.IsNil() {
			return nil
		}

		l := make([]any, 0, v.Len())
		for i := 0; i < v.Len(); i++ {
			l = append(l, jsonable(v.Index(i)))
		}

		return l
	case reflect.Map:
		if v.IsNil() {
			return nil
		}

		m := map[string]any{}

		iter := v.MapRange()
		for iter.Next() {
			m[fmt.Sprintf("%v", iter.Key().Interface())] = jsonable(iter.Value())
		}

		return m
	case reflect.Float32, reflect.Float64:
		f := v.Float()
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return fmt.Sprintf("%v", f)
		}

		return f
	default:
		return v.Interface()
	}
}
