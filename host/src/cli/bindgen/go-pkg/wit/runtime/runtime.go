package runtime

import (
	"fmt"
	"math"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"unsafe"
)

type Handle struct {
	value int32
}

func (h *Handle) Use() int32 {
	if h.value == 0 {
		panic("nil handle")
	}
	return h.value
}

func (h *Handle) Take() int32 {
	if h.value == 0 {
		panic("nil handle")
	}
	value := h.value
	h.value = 0
	return value
}

func (h *Handle) Set(value int32) {
	if value == 0 {
		panic("nil handle")
	}
	if h.value != 0 {
		panic("handle already set")
	}
	h.value = value
}

func (h *Handle) TakeOrNil() int32 {
	value := h.value
	h.value = 0
	return value
}

func MakeHandle(value int32) *Handle {
	if value == 0 {
		panic("nil handle")
	}
	return &Handle{value}
}

func Allocate(pinner *runtime.Pinner, size, align uintptr) unsafe.Pointer {
	// plughost: generated code calls Allocate from export bodies (for an import's
	// return area, just before calling it), where imports are allowed:
	// the safe point for what cabi_realloc must not do.
	atSafePoint()
	pointer := allocateRaw(size, align)
	pinner.Pin(pointer)
	return pointer
}

func allocateRaw(size, align uintptr) unsafe.Pointer {
	if size == 0 {
		return nil
	}

	if size%align != 0 {
		panic(fmt.Sprintf("size %v is not compatible with alignment %v", size, align))
	}

	switch align {
	case 1:
		return unsafe.Pointer(unsafe.SliceData(make([]uint8, size)))
	case 2:
		return unsafe.Pointer(unsafe.SliceData(make([]uint16, size/align)))
	case 4:
		return unsafe.Pointer(unsafe.SliceData(make([]uint32, size/align)))
	case 8:
		return unsafe.Pointer(unsafe.SliceData(make([]uint64, size/align)))
	default:
		panic(fmt.Sprintf("unsupported alignment: %v", align))
	}
}

// NB: `cabi_realloc` may be called before the Go runtime has been initialized,
// in which case we need to use `runtime.sbrk` to do allocations.  The following
// is an abbreviation of [Till's
// efforts](https://github.com/bytecodealliance/go-modules/pull/367).

//go:linkname sbrk runtime.sbrk
func sbrk(n uintptr) unsafe.Pointer

//nolint:unused
var useGCAllocations = false

func init() {
	useGCAllocations = true
	// plughost: no automatic collection. One that starts inside
	// cabi_realloc (when a host call's result tips the heap over its goal)
	// calls imports, `poll_oneoff` and the wall clock, which the component
	// model forbids there: wasmtime traps "cannot leave component
	// instance". Collections run at safe points instead (atSafePoint).
	// This overrides GOGC, and GOMEMLIMIT too, whose limit would start a
	// collection wherever the heap reaches it.
	debug.SetGCPercent(-1)
	debug.SetMemoryLimit(math.MaxInt64)
}

// plughost: collection at safe points, with automatic collection off.
//
// Every few import calls, or sooner once cabi_realloc has handed out
// reallocBytesPerTest, the heap allocated since the last collection is
// compared with what survived it (as GOGC=100 would, but at least
// minHeapGrowth), and a collection runs if it grew past that. A plugin
// that allocates a lot between two host calls can call runtime.GC itself.
//
// This relies on the synchronous canonical ABI: whatever cabi_realloc
// allocates for a host call is turned into Go values before the next
// Allocate. Async lifts (streams, futures) would break that and need
// their own pins.
const (
	minHeapGrowth       = 4 << 20
	safePointsPerTest   = 16
	reallocBytesPerTest = 1 << 20
)

var (
	reallocBytes      uintptr
	safePointsToTest  = safePointsPerTest
	allocsAtLastGC    uint64
	heapGrowthAllowed uint64 = minHeapGrowth
	heapSamples              = []metrics.Sample{
		{Name: "/gc/heap/allocs:bytes"},
		{Name: "/gc/heap/live:bytes"},
	}
)

func atSafePoint() {
	// Whatever cabi_realloc handed out before now has been lifted into Go
	// values by the generated code that asked for it, so the pins (which
	// would keep it alive for ever) can go.
	pinner.Unpin()
	safePointsToTest--
	if (safePointsToTest > 0 && reallocBytes < reallocBytesPerTest) || !useGCAllocations {
		return
	}
	safePointsToTest = safePointsPerTest
	reallocBytes = 0
	metrics.Read(heapSamples[:1])
	if heapSamples[0].Value.Uint64()-allocsAtLastGC < heapGrowthAllowed {
		return
	}
	runtime.GC()
	metrics.Read(heapSamples)
	allocsAtLastGC = heapSamples[0].Value.Uint64()
	heapGrowthAllowed = max(heapSamples[1].Value.Uint64(), minHeapGrowth)
}

//nolint:unused
func offset(ptr, align uintptr) uintptr {
	newptr := (ptr + align - 1) &^ (align - 1)
	return newptr - ptr
}

var pinner = runtime.Pinner{}

func Unpin() {
	pinner.Unpin()
}

//nolint:unused
//go:wasmimport wasi_snapshot_preview1 adapter_monotonic_clock_set_paused
func adapterMonotonicClockSetPaused(paused bool)

//nolint:unused
//go:wasmexport cabi_realloc
func cabiRealloc(oldPointer unsafe.Pointer, oldSize, align, newSize uintptr) unsafe.Pointer {
	if oldPointer != nil || oldSize != 0 {
		panic("todo")
	}

	if useGCAllocations {
		// Here we call `adapter_monotonic_clock_set_paused` before and
		// after allocating since the Go garbage collector calls
		// `clock_time_get` to measure time spent in various stages of
		// GC, but calls to imports from `cabi_realloc` are forbidden by
		// the component model, so we must tell the
		// `wasi_snapshot_preview1` adapter to use a cached value
		// instead of calling `monotonic_clock::now`.
		//
		// See https://github.com/bytecodealliance/wasmtime/pull/13563
		// for more details.
		adapterMonotonicClockSetPaused(true)
		// plughost: not Allocate, whose safe point is not one here.
		pointer := allocateRaw(newSize, align)
		pinner.Pin(pointer)
		reallocBytes += newSize
		adapterMonotonicClockSetPaused(false)
		return pointer
	} else {
		alignedSize := newSize + offset(newSize, align)
		unaligned := sbrk(alignedSize)
		off := offset(uintptr(unaligned), align)
		return unsafe.Add(unaligned, off)
	}
}
