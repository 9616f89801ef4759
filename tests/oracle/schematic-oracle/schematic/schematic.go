// Package schematic is a field-for-field replica of the data model of
// siderolabs/image-factory pkg/schematic (see docs/image-factory-api.md,
// section "Model").
//
// The package name matches upstream so that go-yaml error messages name the
// same types (e.g. "field foo not found in type schematic.Customization").
package schematic

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"

	"gopkg.in/yaml.v3"

	"bootfactory.test/schematic-oracle/imageropts"
)

// Schematic is the top-level schematic document.
type Schematic struct {
	Owner         string        `yaml:"owner,omitempty"`
	Overlay       Overlay       `yaml:"overlay,omitempty"`
	Customization Customization `yaml:"customization"`
}

// Customization describes the image customization.
type Customization struct {
	EmbeddedMachineConfiguration string                    `yaml:"embeddedMachineConfiguration,omitempty"`
	ExtraKernelArgs              []string                  `yaml:"extraKernelArgs,omitempty"`
	Meta                         []MetaValue               `yaml:"meta,omitempty"`
	SystemExtensions             SystemExtensions          `yaml:"systemExtensions,omitempty"`
	Bootloader                   imageropts.BootloaderKind `yaml:"bootloader,omitempty"`
	SecureBoot                   SecureBootCustomization   `yaml:"secureboot,omitempty"`
	DiskImage                    DiskImageCustomization    `yaml:"diskImage,omitempty"`
}

// MetaValue is a META partition key/value pair.
type MetaValue struct {
	Key   uint8  `yaml:"key"`
	Value string `yaml:"value"`
}

// SystemExtensions lists the system extensions.
type SystemExtensions struct {
	OfficialExtensions []string `yaml:"officialExtensions,omitempty"`
}

// Overlay is the board overlay selection.
type Overlay struct {
	Image   string         `yaml:"image"`
	Name    string         `yaml:"name"`
	Options map[string]any `yaml:"options,omitempty"`
}

// SecureBootCustomization holds SecureBoot settings.
type SecureBootCustomization struct {
	EnrollKeys                   string `yaml:"enrollKeys,omitempty"`
	IncludeWellKnownCertificates bool   `yaml:"includeWellKnownCertificates,omitempty"`
}

// DiskImageCustomization holds disk image settings.
type DiskImageCustomization struct {
	SectorSize uint `yaml:"sectorSize,omitempty"`
}

// Unmarshal decodes a schematic exactly like upstream: strict decoder, first
// document only.
func Unmarshal(in []byte) (*Schematic, error) {
	var s Schematic

	dec := yaml.NewDecoder(bytes.NewReader(in))
	dec.KnownFields(true)

	if err := dec.Decode(&s); err != nil {
		return nil, err
	}

	return &s, nil
}

// Marshal returns the canonical representation (yaml.Marshal defaults).
func (s *Schematic) Marshal() ([]byte, error) {
	return yaml.Marshal(s)
}

// ID returns the hex-encoded SHA-256 of the canonical representation.
func (s *Schematic) ID() (string, error) {
	data, err := s.Marshal()
	if err != nil {
		return "", err
	}

	sum := sha256.Sum256(data)

	return hex.EncodeToString(sum[:]), nil
}
