// Package imageropts replicates the BootloaderKind enum of Talos
// (pkg/imager/profile/... imageropts.BootloaderKind), including the text
// (un)marshalling behaviour produced by the enumer code generator.
//
// The package is deliberately named "imageropts" so that go-yaml error
// messages mention the same type name as upstream
// (e.g. "cannot unmarshal !!seq into imageropts.BootloaderKind").
package imageropts

import (
	"fmt"
	"strings"
)

// BootloaderKind is the bootloader selection of an image.
type BootloaderKind int

// Values of BootloaderKind.
const (
	BootloaderKindNone BootloaderKind = iota
	BootloaderKindDualBoot
	BootloaderKindSDBoot
	BootloaderKindGrub
)

var bootloaderKindNames = []string{"none", "dual-boot", "sd-boot", "grub"}

// String implements fmt.Stringer.
func (k BootloaderKind) String() string {
	if k < 0 || int(k) >= len(bootloaderKindNames) {
		return fmt.Sprintf("BootloaderKind(%d)", int(k))
	}

	return bootloaderKindNames[k]
}

// BootloaderKindString parses a BootloaderKind name: exact match first, then a
// case-insensitive match.
func BootloaderKindString(s string) (BootloaderKind, error) {
	for i, name := range bootloaderKindNames {
		if name == s {
			return BootloaderKind(i), nil
		}
	}

	lower := strings.ToLower(s)
	for i, name := range bootloaderKindNames {
		if name == lower {
			return BootloaderKind(i), nil
		}
	}

	return 0, fmt.Errorf("%s does not belong to BootloaderKind values", s)
}

// MarshalText implements encoding.TextMarshaler.
func (k BootloaderKind) MarshalText() ([]byte, error) {
	return []byte(k.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (k *BootloaderKind) UnmarshalText(text []byte) error {
	var err error

	*k, err = BootloaderKindString(string(text))

	return err
}
